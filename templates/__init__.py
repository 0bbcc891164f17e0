"""Package data: the Jinja templates of the files easycluster manages on each host (read with importlib.resources)."""
