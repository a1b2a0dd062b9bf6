"""The kept strings of a string-sampling sweep: read back (:func:`kept_strings`), saved
with their weights (``strings.npz``, indexed by ``strings.csv``; :func:`save_strings`) and
projected on their top principal directions (:func:`string_projection`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ray_jobs.report.aggregate import deduplicate

STRINGS_NPZ = "strings.npz"
STRINGS_CSV = "strings.csv"


def kept_strings(store) -> pd.DataFrame | None:
    """Rows (deduplicated) that carry a kept string, best first for the PCA figure: connected
    before not, most beads, lowest threshold, lowest seed; None when there are none."""
    wanted = [
        "cell_id",
        "seed",
        "status",
        "problem",
        "threshold",
        "string_pass_factor",
        "width",
        "depth",
        "activation",
        "dss_connected",
        "dss_beads",
        "dss_normalized_length",
        "dss_string",
        "dss_string_losses",
        "dss_bead_losses",
    ]
    names = store.schema().names
    if "dss_string" not in names:
        return None
    rows = store.read(columns=[c for c in wanted if c in names])
    if rows.num_rows == 0:
        return None
    frame = deduplicate(rows.to_pandas())
    frame = frame[frame["dss_string"].notna()]
    if frame.empty:
        return None
    frame = frame.assign(_connected=frame["dss_connected"].fillna(False).astype(bool))
    frame = frame.sort_values(
        ["_connected", "dss_beads", "threshold", "seed", "cell_id"],
        ascending=[False, False, True, True, True],
        kind="stable",
    )
    return frame.drop(columns="_connected").reset_index(drop=True)


def _string_array(value):
    import numpy as np

    return np.array([np.asarray(bead, dtype=float) for bead in value], dtype=float)


def save_strings(strings: pd.DataFrame, store) -> list[Path]:
    """Every kept string's weights in ``strings.npz`` (key ``<cell_id>_seed<seed>``: beads x
    parameters, endpoints first and last; ``<key>_bead_losses``: each model's training
    loss), indexed by ``strings.csv``."""
    import io

    import numpy as np

    arrays, index = {}, []
    for row in strings.to_dict("records"):
        key = f"{row['cell_id']}_seed{int(row['seed'])}"
        arrays[key] = _string_array(row["dss_string"])
        arrays[f"{key}_bead_losses"] = np.asarray(row["dss_bead_losses"], dtype=float)
        index.append(
            {
                "key": key,
                **{
                    c: row[c]
                    for c in (
                        "cell_id",
                        "seed",
                        "problem",
                        "threshold",
                        "width",
                        "depth",
                        "activation",
                        "dss_connected",
                        "dss_beads",
                        "dss_normalized_length",
                    )
                },
                "parameters": arrays[key].shape[1],
            }
        )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    npz = store.report_dir / STRINGS_NPZ
    npz.parent.mkdir(parents=True, exist_ok=True)
    staging = npz.with_name(f".{npz.name}.tmp")
    staging.write_bytes(buffer.getvalue())
    staging.replace(npz)
    csv = store.report_dir / STRINGS_CSV
    store.save_text(csv, pd.DataFrame(index).to_csv(index=False))
    return [npz, csv]


def string_projection(string, dims: int = 3):
    """Coordinates (B, dims) of a string's beads on its top principal directions (of the
    centred beads, endpoints included) and the fraction of variance each explains."""
    import numpy as np

    beads = np.asarray(string, dtype=float)  # (B, P)
    centred = beads - beads.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(dims, vt.shape[0])
    coords = np.zeros((beads.shape[0], dims))
    coords[:, :k] = centred @ vt[:k].T
    total = float((singular**2).sum())
    explained = np.zeros(dims)
    explained[:k] = singular[:k] ** 2 / total if total > 0 else 0.0
    return coords, explained
