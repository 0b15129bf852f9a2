from raypair.cli import entry

entry()
