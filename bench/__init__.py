"""Speed and memory benchmarks: each script prints one JSON object (see BENCHMARKS.md)."""
