"""Remote pipelines: the coordinator that runs a pipeline's steps as child runs (see `coordinator`)."""
