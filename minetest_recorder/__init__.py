"""Minetest (Luanti) gameplay recorder: `python -m minetest_recorder --help`."""
