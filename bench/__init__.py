"""Speed and memory measurements (ratios against a baseline run in the same invocation); run as ``python -m bench.<script>`` from the repository root. Never run by CI."""
