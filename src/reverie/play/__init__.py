"""Interactive play in the browser: `reverie play` (an ASGI server, one page, WebSockets).

    from reverie.play.server import create_app
    app = create_app(lambda: WorldModel.random(seed=0), max_sessions=2)

Modules: ``protocol`` (messages, frame packing), ``stream`` (generation thread, bounded outbox),
``session`` (one tab), ``clip`` (Save clip), ``images`` (start images), ``routes`` (HTTP
routers), ``ws`` (the WebSocket router), ``server`` (the app), ``cli``. The package itself
imports nothing heavy, so ``reverie --help`` stays fast. See docs/play.md for the protocol and
measured figures.
"""
