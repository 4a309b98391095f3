"""preprocess.py: video + action logs -> per-video token shards + manifest.json. Not implemented yet: see issue #3."""
import sys

if __name__ == "__main__":
    sys.exit("preprocess.py is not implemented yet (issue #3).")
