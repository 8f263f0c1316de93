"""The cluster agent (role ``cluster``): the model roles as Ray Serve deployments.

``options.py`` validates the agent's options, ``head.py`` owns a local Ray head process,
``serve_app.py`` makes every Ray Serve call (deploy, scale, status), ``deployment.py`` is the
deployment that wraps the SAME service code as the local services, ``watch.py`` turns Serve's
status into replica counts, restarts and metrics, and ``service.py`` ties them together as a
supervised service (``python -m services.cluster``).
"""
