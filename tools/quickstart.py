"""The README's first command: the whole job on the embedded default data (synthetic lung phantoms)."""

from __future__ import annotations

from pathlib import Path

from tools import phantoms


def run(out: str = "runs/quickstart", n_training: int = 6, n_validation: int = 2, n_test: int = 2,
        shape: int = 48, seed: int = 0) -> str:
    """Generate lung phantoms, then (once the cascade bundle exists) train, predict and evaluate on CPU.

    Prints where the outputs are and returns the output folder.
    """
    out_dir = Path(out)
    datalist = phantoms.generate(out=str(out_dir / "data"), profile="lung", n_training=n_training,
                                 n_validation=n_validation, n_test=n_test, shape=shape, seed=seed, preview=True)
    print(f"quickstart dataset ready: {datalist}")
    print(f"report: {out_dir / 'data' / 'previews'} (training, prediction and evaluation come with the "
          "cascade bundle)")
    return str(out_dir)
