"""``sm``: the operator's CLI. It talks only to main's control API over HTTP."""
