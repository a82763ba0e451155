"""Scale-out on Ray (optional: pip install 'dlsr-deploy[ray]'): batch scoring with Ray Data
(`score_dataset`, `dlsr-score --ray`) and an online service on Ray Serve (`build_app`,
`dlsr-serve`). The only code that imports Ray; it uses the runtime's public `Detector`."""

from dlsr_deploy.scale.batch import JobOptions, score_dataset

__all__ = ["JobOptions", "score_dataset"]
