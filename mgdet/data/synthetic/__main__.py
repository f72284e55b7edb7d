"""``python -m mgdet.data.synthetic [N] [SIZE]``: generation statistics and speed."""
import json
import sys

from mgdet.data.synthetic.generated import describe, generate

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
size = int(sys.argv[2]) if len(sys.argv) > 2 else 160
d = generate(n, size, 0, "train")
print(json.dumps(describe(d), indent=1))
print(f"{n / max(d.seconds, 1e-9):.0f} images/s")
