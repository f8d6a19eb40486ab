"""The web app: an ASGI application (Starlette) in front of a colorizer.

`app.make_app` builds it, `batcher.Batcher` feeds the network, and
`jaxcolor/web/server.py` is the command that runs it under uvicorn.
"""
