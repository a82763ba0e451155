"""runtime.scored.ScoredImages: one result type read three ways (dlsr-score rows, Ray Data columns,
the service's JSON), unreadable inputs in place with their error."""

import numpy as np

from dlsr_deploy.runtime.scored import ScoredImages


class _Manifest:
    @staticmethod
    def output_name(x):
        return f"score_{x}"


class _Det:
    manifest = _Manifest()


def _scored():
    res = {  # predict() on the two readable inputs of three
        "maha_ridge": np.array([1.5, 9.0]),
        "mse": np.array([0.25, 0.5]),
        "score": np.array([1.5, 9.0]),
        "normalized": np.array([0.25, 1.5]),
        "is_ood": np.array([False, True]),
    }
    ok = np.array([True, False, True])
    return ScoredImages.of(_Det(), ["a.png", "b.png", "c.png"], res, ["maha_ridge", "mse"], ok, ["", "broken", ""])


def test_rows_keep_input_order_and_errors():
    rows = _scored().rows()
    assert [r["image"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert rows[0] == {
        "image": "a.png", "score_maha_ridge": 1.5, "score_mse": 0.25, "normalized": 0.25, "is_ood": False, "error": ""
    }  # fmt: skip
    assert rows[1]["score_mse"] is None and rows[1]["is_ood"] is None and rows[1]["error"] == "broken"
    assert rows[2]["is_ood"] is True and rows[2]["score_maha_ridge"] == 9.0


def test_columns_round_trip_to_the_same_rows():
    s = _scored()
    cols = s.columns_dict()
    assert cols["score_mse"].dtype == np.float32 and np.isnan(cols["normalized"][1]) and cols["is_ood"].tolist() == [
        False, False, True
    ]  # fmt: skip
    back = ScoredImages.from_columns({"id": np.array(s.ids), **cols}, ["score_maha_ridge", "score_mse"])
    assert back.rows() == [{**r} for r in s.rows()]


def test_service_results_carry_the_headline_and_each_score():
    r = _scored().results()
    assert r[2] == {"score": 9.0, "normalized": 1.5, "is_ood": True, "scores": {"maha_ridge": 9.0, "mse": 0.5}}
