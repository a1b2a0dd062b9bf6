"""The teacher-student report counts families as the authors do and certifies them.

Rows of one cell are built from the authors' own k = n = 8 spurious minimum
(``safran_shamir_2018_minima.npz``: one family at k = n = 8) under random student AND
coordinate permutations: one family under the full symmetry group (several under student
permutations alone, the old count), certified, every run a certified spurious minimum;
the report table, its markdown and ``report/families.csv`` carry it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ray_jobs.experiments.registry import get_experiment, get_layout
from ray_jobs.experiments.teacher_student.families import FAMILY_COLUMNS
from ray_jobs.report import build_report
from ray_jobs.store import ResultsStore

MINIMA = (
    Path(__file__).resolve().parents[1] / "sweeps" / "reference" / "safran_shamir_2018_minima.npz"
)  # the authors' data (shipped copy of ../shared/reference)


def _rows(*, members: int = 6, runs: int = 50, seed: int = 0) -> pd.DataFrame:
    """``runs`` rows of the cell k = n = 8: ``members`` spurious copies of the authors'
    minimum under random (P, Q), the rest global."""
    W = np.load(MINIMA)["W_k8_n8"][0]  # (8, 8)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(runs):
        spurious = index < members
        P, Q = np.eye(8)[rng.permutation(8)], np.eye(8)[rng.permutation(8)]
        point = P @ W @ Q if spurious else np.eye(8)
        rows.append(
            {
                "sweep": "s",
                "experiment": "teacher_student",
                "cell_id": "cell-8-8",
                "unit_id": f"u{index // 10}",
                "seed": index,
                "status": "spurious" if spurious else "global",
                "k": 8,
                "n": 8,
                "d": 8,
                "teacher": "identity",
                "final_loss": 0.021508 if spurious else 0.0,
                "grad_norm": 1e-10,
                "iterations": 1000,
                "wall_s": 0.1,
                "min_eig": 0.0213 if spurious else 0.0908,
                "bad_loss_threshold": 1e-3,
                "final_weights": point.ravel().tolist(),
                "error_message": None,
            }
        )
    return pd.DataFrame(rows)


def test_permuted_copies_of_the_authors_minimum_are_one_certified_family():
    layout = get_layout(get_experiment("teacher_student"), {"family_tol": 1e-4})
    out = layout.extra_aggregates(_rows(), confidence=0.99)
    assert out["n_families"] == 1
    assert out["n_families_student_perm"] > 1  # coordinate permutations split them under neuron permutations alone
    assert out["n_families_certified"] == 1 and out["n_certified_spurious"] == 6
    assert out["frac_certified_spurious"] == pytest.approx(6 / 50)
    assert out["frac_certified_spurious_lo"] < 6 / 50 < out["frac_certified_spurious_hi"]
    assert 0 < out["min_certified_lambda_lo"] <= 0.0214  # the authors' point: smallest eigenvalue 0.02135
    assert 0 < out["max_certified_radius"] < 1e-4


def test_no_spurious_run_means_no_family_and_no_certificate():
    layout = get_layout(get_experiment("teacher_student"), {"family_tol": 1e-4})
    out = layout.extra_aggregates(_rows(members=0), confidence=0.99)
    assert out["n_families"] == 0 and out["n_certified_spurious"] == 0 and out["frac_certified_spurious"] == 0.0


def test_the_report_shows_certified_spurious_and_writes_families_csv(tmp_path):
    import pyarrow as pa

    layout = get_layout(get_experiment("teacher_student"), {"family_tol": 1e-4})
    store = ResultsStore(tmp_path, "s")
    store.prepare()
    rows = _rows()
    store.write_fragment("all", pa.Table.from_pandas(rows, preserve_index=False))
    store.close()
    report = build_report(store, layout, sweep="s", confidence=0.99, reference=None, figure=False)
    assert "certified spurious % [99% CI]" in report.markdown and "families (student perm.)" in report.markdown
    line = next(text for text in report.markdown.splitlines() if text.startswith("| 8 | 8 |"))
    assert "| 12.0 [4.5, 28.4] | 12.0 [4.5, 28.4] |" in line  # spurious and certified spurious
    families = pd.read_csv(store.report_dir / "families.csv")
    assert list(families.columns) == ["k", "n", *FAMILY_COLUMNS]
    assert len(families) == 1 and families.loc[0, "multiplicity"] == 6 and bool(families.loc[0, "certified"])
    assert store.report_dir / "families.csv" in report.paths
    runs = pd.read_csv(store.report_dir / "run_certificates.csv")  # each spurious run with its family's certificate
    assert runs["seed"].tolist() == list(range(6)) and runs["certified"].all() and (runs["family"] == 0).all()
    assert (runs["certified_reason"] == "certified").all()
    assert runs["certified_lambda_lo"].nunique() == 1 and 0.02 < runs.loc[0, "certified_lambda_lo"] < 0.0214


def test_with_the_table_1_reference_the_authors_families_stand_beside_ours(tmp_path):
    import pyarrow as pa

    layout = get_layout(get_experiment("teacher_student"), {"family_tol": 1e-4})
    store = ResultsStore(tmp_path, "s")
    store.prepare()
    store.write_fragment("all", pa.Table.from_pandas(_rows(), preserve_index=False))
    store.close()
    reference = MINIMA.parent / "safran_shamir_2018_table1.csv"
    report = build_report(store, layout, sweep="s", confidence=0.99, reference=reference, figure=False)
    assert report.table.loc[0, "ref_n_families"] == 1  # the authors' .npz: one family at k = n = 8 (126 runs)
    assert "families | families (student perm.) | authors' families |" in report.markdown
    line = next(text for text in report.markdown.splitlines() if text.startswith("| 8 | 8 |"))
    assert "| 12.6 | yes |" in line and "| 1 | " in line
    # the families table: ours (one family of 6 runs, certified) beside the authors' (one of 126)
    assert (
        report.table.loc[0, "family_multiplicities"] == "[6]"
        and report.table.loc[0, "ref_family_multiplicities"] == "[126]"
    )
    assert "| 8 | 8 | 1 | [6] | 1 | 6 | 1 | [126] |" in report.markdown.splitlines()


def test_the_worker_records_each_spurious_runs_certificate_and_null_for_the_rest():
    """With ``experiment.certify_runs``, teacher_student's ``with_certificates`` over one
    unit's records (the authors' k = n = 8 minimum under random permutations, and global
    runs): every spurious run certified with its family's bound, equal to certifying the
    family directly; global runs null; an orthonormal teacher gets no certificate (not the
    authors' setting)."""
    from landscape_core.certification import certify_family
    from ray_jobs.experiments.teacher_student.experiment import with_certificates

    records = _rows(members=4, runs=7).to_dict("records")
    params = {"k": 8, "n": 8, "d": 8, "teacher": "identity", "bad_loss_threshold": 1e-3, "certify_runs": True}
    out = with_certificates(records, params)
    assert [record["certified"] for record in out] == [True] * 4 + [None] * 3
    direct = certify_family(np.stack([np.asarray(r["final_weights"]).reshape(8, 8) for r in records[:4]]))
    for record in out[:4]:
        assert record["certified_reason"] == "certified"
        assert record["certified_lambda_lo"] == pytest.approx(direct.lambda_lo, rel=1e-9)
        assert 0 < record["certified_radius"] == pytest.approx(direct.cover_radius, rel=1e-9)
    assert all(record["certified_lambda_lo"] is None for record in out[4:])
    assert "certified" not in records[0]  # inputs untouched
    other = with_certificates(records, {**params, "teacher": "orthonormal"})
    assert all(record["certified"] is None for record in other)
