"""Size against mean KLD of llama.cpp's stock mixes and dynq's tuned targets, one panel per model.

    .venv/bin/python bench/plot_tuning.py BUILD_DIR [BUILD_DIR ...] -o docs/img/tuning-frontier.png

Each BUILD_DIR is the `--out` folder of a bench/tune.py run (`dynq eval --baselines` leaves the
tuned targets' reports `*.eval.json` there and the stock mixes' under `baselines/`). Reads only
those JSON reports; needs matplotlib (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def reports(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.eval.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("builds", type=Path, nargs="+")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(args.builds), figsize=(6 * len(args.builds), 4.5), squeeze=False
    )
    for ax, folder in zip(axes[0], args.builds, strict=True):
        stock = sorted(reports(folder / "baselines"), key=lambda r: r["file_size"])
        tuned = sorted(reports(folder), key=lambda r: r["file_size"])
        if not stock or not tuned:
            raise SystemExit(f"{folder}: no evaluation reports (run bench/tune.py first)")
        for rows, label, style in (
            (stock, "llama.cpp stock mix", "o--"),
            (tuned, "dynq tuned", "s-"),
        ):
            x = [r["file_size"] / 1e6 for r in rows]
            y = [r["mean_kld"] for r in rows]
            ax.plot(x, y, style, label=label)
            for r, xi, yi in zip(rows, x, y, strict=True):
                name = r["target"].removeprefix("UD-").removeprefix("llama.cpp:")
                ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel("mean KLD vs full precision (nats/token)")
        ax.set_title(f"{tuned[0]['recipe']} ({tuned[0]['chunks']}×{tuned[0]['ctx']} eval tokens)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
