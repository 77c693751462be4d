"""SAM 2 / SAM 2.1 (Meta's ``sam2`` package) as an engine: one model serves clicks on a frame
(:mod:`.segmenter`) and memory propagation (:mod:`.tracker`), fed lazily from our frame
sources with a bounded memory (:mod:`.tracker`), loaded strictly from official checkpoints
(:mod:`.model`)."""
