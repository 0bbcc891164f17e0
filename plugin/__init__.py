"""Package data: the Erlang sources of the easy_cluster plugin, compiled on each host (read with importlib.resources)."""
