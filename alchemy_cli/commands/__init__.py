"""One module per ``litestar db`` command: parse nothing, call the library, render."""
