"""What SpotCheck tells a person, for each answer. Plain text (Markdown), well-established facts only.

Sources: the cherry-angioma articles quoted in the project's issues; claims
they make without good evidence (liver or gut causes, vitamin deficiencies,
cures by diet, creams) are deliberately left out.
"""
from __future__ import annotations

DISCLAIMER = (
    "**SpotCheck is not a diagnosis.** It is an automated estimate from one photo and can be wrong. "
    "See a doctor if you are in doubt, or if a spot is new, grows, changes, bleeds, itches or does not heal."
)

HEADLINES = {
    "vascular": "Looks like a cherry angioma: usually a harmless red spot",
    "nevus": "Looks like a mole",
    "other": "Another kind of spot: have a doctor look at it",
    "unsure": "Not sure: SpotCheck cannot tell from this photo",
}

SEE_A_DOCTOR = (
    "See a doctor soon if a spot is new (above all in a child) or looks unlike your other spots, if many spots appear "
    "suddenly, or if a spot grows, changes size, shape or colour, bleeds without being injured, itches or does not heal."
)

# How far the shipped model's percentages can be taken on ordinary photos: of the 217 clinical validation and test
# photos, those it answered vascular or nevus at 90% or more, and how many of them were something else (wrong, all).
# Measured for that checkpoint only (its SHA-256): another model (`--checkpoint`) gets the plain warning.
# test_predictor.py measures them again.
OVERSURE = {"vascular": (3, 9), "nevus": (2, 39)}
OVERSURE_FROM = 0.9
OVERSURE_CHECKPOINT = "ed622064051ab6c1ddb23a93aff7fda8cf7704fe8bf9cffd2ba6b2f4e4961212"
NOT_A_CHANCE = "Its percentage is not the chance that it is right."
CALLED = {"vascular": "a cherry angioma", "nevus": "a mole"}


# Said in the answer itself, right under the reason, where a phone shows it without scrolling: the two answers that
# reassure, each with the dangerous spots it can hide (measured per kind of lesion in model/weights/MODEL_CARD.md).
CAUTION = {
    "vascular": "A photo cannot rule out the few dangerous spots that look like this (a red melanoma, or a fast-growing "
                "red bump that bleeds easily): **see a doctor if the spot is new, growing, changing, bleeding or "
                "itching.**",
    "nevus": "A photo cannot tell a mole from an early melanoma, which can look just like one: SpotCheck has taken "
             "some melanomas for moles. **Check the spot against the ABCDE signs below, and have a dermatologist look "
             "at it if any of them applies or if the spot is new or changing.**",
}


def caution(label: str, checkpoint_sha256: str, confidence: float) -> str:
    """The caution said under a reassuring answer ("" under the others), with how often the shipped model's answers
    of that kind at 90% or more were wrong on everyday photos when it is the model answering at 90% or more (under
    it, the figure read as reassurance that the answer does not have)."""
    if label not in CAUTION:
        return ""
    if checkpoint_sha256 != OVERSURE_CHECKPOINT or confidence < OVERSURE_FROM:
        return f"{CAUTION[label]} {NOT_A_CHANCE}"
    wrong, answered = OVERSURE[label]
    return (f"{CAUTION[label]} {NOT_A_CHANCE.removesuffix('.')}: of {answered} everyday photos that it called "
            f"{CALLED[label]} at over 90%, {wrong} were something else.")


BLANCH_TEST = (
    "**Blanch test:** press a clear glass gently on the red spot for a few seconds and look at it through the "
    "glass. A cherry angioma fades under pressure and its colour comes back when you let go. A red spot that "
    "does not fade under the glass is not typical of a cherry angioma: have a doctor look at it, urgently if you "
    "feel unwell or have a fever. A spot that fades does not settle it either: some other red spots fade too, and "
    "the warning signs below still apply."
)

ABCDE = (
    "**ABCDE signs** - see a dermatologist if a mole shows any of them:\n"
    "- **A**symmetry: the two halves do not match\n"
    "- **B**order: ragged, notched or blurred edge\n"
    "- **C**olour: several shades of brown, black, red, white or blue\n"
    "- **D**iameter: larger than about 6 mm\n"
    "- **E**volving: it changes in size, shape, colour, or starts to itch or bleed"
)

GUIDANCE = {
    "vascular": "\n\n".join([
        "Cherry angiomas (also called ruby spots, senile haemangiomas or Campbell de Morgan spots) are small, "
        "benign growths of widened capillaries in the skin. They begin as flat, sharply outlined bright-red dots "
        "and can become small dome-shaped bumps, usually about 4 mm and rarely over 1 cm, turning darker red with "
        "time. They appear mostly on the trunk, less often on the arms, legs and face.",
        "They are common, a tendency to them can run in families, and they usually start to appear from about "
        "age 35-40, with more as people get older. Cherry angiomas themselves are harmless; a raised one can bleed if it "
        "is scratched "
        "or knocked.",
        BLANCH_TEST,
        "SpotCheck can be wrong: on ordinary photos it has taken a few red melanomas for cherry angiomas. **Do not "
        "rely on this answer for a spot that is new, growing, changing, bleeding or itching:** have it checked by a "
        "doctor.",
        "Removal is only needed for cosmetic reasons or for a spot that is often rubbed or injured. A dermatologist "
        "can remove one, for example by laser, by freezing, with a fine electric needle or by a small cut; any "
        "method can leave a small mark. Be wary of creams and remedies sold online.",
        SEE_A_DOCTOR,
    ]),
    "nevus": "\n\n".join([
        "Moles (melanocytic nevi) are brown or black spots made of pigment cells. Most are harmless, but they "
        "should be watched: have them checked regularly by a dermatologist, and sooner if one changes.",
        ABCDE,
        SEE_A_DOCTOR,
    ]),
    "other": "\n\n".join([
        "This spot does not look like a typical cherry angioma or a typical mole. Many such spots are harmless, "
        "but some are skin cancers (melanoma, carcinoma) that need treatment, and this tool cannot tell them apart.",
        "**Have it checked by a doctor or dermatologist.**",
        SEE_A_DOCTOR,
    ]),
    "unsure": "\n\n".join([
        "SpotCheck cannot give a reliable answer for this photo. If the reason is the photo itself, retake it: "
        "close up, in focus, in daylight, with the spot in the middle.",
        "If a clearer photo still gives no answer, or you are worried about the spot, **have it checked by a "
        "doctor**: this tool cannot tell.",
        SEE_A_DOCTOR,
    ]),
}
# Every answer ends with the disclaimer as well: over the API there is no page around it (so does every reply
# that is no answer: serve.app gives it alone).
GUIDANCE = {label: f"{text}\n\n{DISCLAIMER}" for label, text in GUIDANCE.items()}

PHOTO_TIPS = (
    "**How to take a good photo:** get close (the spot should fill a good part of the picture), "
    "hold steady so it is in focus, use daylight without flash, and keep the spot in the middle. Leave pen marks, "
    "rulers and writing out of the picture: they can sway the answer."
)

# In the answer box until there is an answer, so that an empty box does not look like a failure.
WAITING = "The answer appears here once you have added a photo and pressed **Check this spot**."
