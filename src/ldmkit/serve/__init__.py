"""`ldmkit serve`: HTTP API (FastAPI) over a persistent SQLite job queue and one worker thread.

store (jobs.sqlite3 + images/), worker (pipelines, batching, progress, cancel), request (JSON ->
SamplingSettings), guard (host, token, origin, content type, body size), events (progress streams),
app (the routes). FastAPI and uvicorn are the optional `serve` extra; nothing imports this package.
"""
