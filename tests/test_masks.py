"""Mask helpers at the bottom of the stack (backend/masks.py)."""

import numpy as np

from backend.masks import pixel_of, wrong_points


def test_wrong_points_names_the_clicks_a_mask_contradicts():
    mask = np.zeros((10, 20), bool)
    mask[2:6, 3:9] = True
    points = np.array([[4, 3], [15, 8], [5, 4], [12, 2]], np.float32)  # (x, y)
    labels = np.array([1, 0, 0, 1])
    # the positive in the mask and the negative outside hold; the other two do not
    assert wrong_points(mask, points, labels) == [(5, 4, False), (12, 2, True)]
    assert wrong_points(mask, points[:2], labels[:2]) == []


def test_wrong_points_clamps_points_on_the_far_edge():
    mask = np.zeros((4, 4), bool)
    mask[3, 3] = True
    # a click at the mask's width/height (a box edge, a rounded coordinate) reads the last pixel
    assert wrong_points(mask, np.array([[4.0, 4.0]]), np.array([1])) == []
    assert wrong_points(mask, np.array([[4.0, 4.0]]), np.array([0])) == [(3, 3, False)]


def test_pixel_of_is_row_col_clamped_to_the_image():
    assert pixel_of(5.9, 2.1, (10, 20)) == (2, 5)
    assert pixel_of(20.0, 10.0, (10, 20, 3)) == (9, 19)
    assert pixel_of(-0.5, -3.0, (10, 20)) == (0, 0)
