"""Every metric the seed systems report, with their published conventions (``docs/metrics.md``).

One module per family: :mod:`~locscope.metrics.threshold` (median thresholds, IoU), :mod:`~locscope.metrics.resolution`
(MSF in nm), :mod:`~locscope.metrics.fid` (Fréchet distance, FID-O / FID-T images),
:mod:`~locscope.metrics.feature_networks` and :mod:`~locscope.metrics.inception` (feature networks),
:mod:`~locscope.metrics.pixel` (SSIM, PSNR, PCC, MSE, MAE), :mod:`~locscope.metrics.celle2` (CELL-E 2's image metrics),
:mod:`~locscope.metrics.features` (NN match, k-NN, classification agreement, cluster score),
:mod:`~locscope.metrics.truth` (against the simulator's masks), :mod:`~locscope.metrics.sequence` (multi-label AP/F1).
"""

from locscope.metrics.celle2 import (
    binary_pixel_mae, nucleus_mask, nucleus_proportion, nucleus_proportion_error, pdf_mae,
)
from locscope.metrics.features import (
    classification_agreement,
    cluster_score,
    cosine_similarity,
    knn_accuracy,
    knn_predict,
    nn_match,
)
from locscope.metrics.fid import FeatureStats, fid_rgb, frechet_distance, frechet_distance_from_stats, to_uint8
from locscope.metrics.pixel import mae, mse, pcc, pixel_metrics, psnr, ssim
from locscope.metrics.resolution import PIXEL_SIZE_NM, MSFResult, msf, msf_resolution_nm, power_spectrum, radial_sum
from locscope.metrics.sequence import (
    average_precision,
    coarsen_scores,
    hierarchical_scores,
    multilabel_scores,
    multilabel_targets,
)
from locscope.metrics.threshold import iou, mask_iou, median_threshold, threshold_mask
from locscope.metrics.truth import iou_vs_truth, localization_fidelity, true_protein_mask

__all__ = [
    "FeatureStats", "MSFResult", "PIXEL_SIZE_NM", "average_precision", "binary_pixel_mae", "classification_agreement",
    "cluster_score", "coarsen_scores", "hierarchical_scores", "cosine_similarity", "fid_rgb", "frechet_distance", "frechet_distance_from_stats", "iou",
    "iou_vs_truth", "knn_accuracy", "knn_predict", "localization_fidelity", "mae", "mask_iou", "median_threshold",
    "mse", "msf", "msf_resolution_nm", "multilabel_scores", "multilabel_targets", "nn_match", "nucleus_mask", "nucleus_proportion",
    "nucleus_proportion_error", "pcc", "pdf_mae", "pixel_metrics", "power_spectrum", "psnr", "radial_sum", "ssim",
    "threshold_mask", "to_uint8", "true_protein_mask",
]
