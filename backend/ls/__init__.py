"""Everything that knows Label Studio: labeling configs, prompts from its JSON, results and
brush RLE, the API client, task media fetching and export. Nothing below this package
(sessions, engines, frames, masks) imports it."""
