"""How crosstrain is extended: `hookspecs` declares every hook once, `registry` is the
pluggy host and its name tables, `protocol` is the Backend/Program contract a backend
implements, and `protocol_wrap` adapts plain objects to it. (The built-in plugins themselves
live in `crosstrain.plugins`.)"""
