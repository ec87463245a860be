"""``gnomon serve``: an OpenAI-compatible HTTP server that steers and monitors with catalog
directions per request (:mod:`jobs.serve.app`), over one model owned by a batching thread
(:mod:`jobs.serve.worker`). Nothing is imported here: FastAPI loads only when serving."""
