"""The attribute ontology of the official MetaShift code (`dataset/Constants.py`,
`ATTRIBUTE_CONTEXT_ONTOLOGY`): the attributes its attribute subsets (`cat(orange)`,
`dog(sitting)`) are drawn from. 27 categories, 114 entries, 111 distinct words
('leather' is listed twice; 'dark' and 'short' sit in two categories each)."""

from __future__ import annotations

ATTRIBUTE_ONTOLOGY: dict[str, tuple[str, ...]] = {
    "darkness": ("dark", "bright"),
    "dryness": ("wet", "dry"),
    "colorful": ("colorful", "shiny"),
    "leaf": ("leafy", "bare"),
    "emotion": ("happy", "calm"),
    "sports": ("baseball", "tennis"),
    "flatness": ("flat", "curved"),
    "lightness": ("light", "heavy"),
    "gender": ("male", "female"),
    "width": ("wide", "narrow"),
    "depth": ("deep", "shallow"),
    "hardness": ("hard", "soft"),
    "cleanliness": ("clean", "dirty"),
    "switch": ("on", "off"),
    "thickness": ("thin", "thick"),
    "openness": ("open", "closed"),
    "height": ("tall", "short"),
    "length": ("long", "short"),
    "fullness": ("full", "empty"),
    "age": ("young", "old"),
    "size": ("large", "small"),
    "pattern": ("checkered", "striped", "dress", "dotted"),
    "shape": ("round", "rectangular", "triangular", "square"),
    "activity": (
        "waiting", "staring", "drinking", "playing", "eating", "cooking", "resting", "sleeping", "posing",
        "talking", "looking down", "looking up", "driving", "reading", "brushing teeth", "flying", "surfing",
        "skiing", "hanging",
    ),
    "pose": ("walking", "standing", "lying", "sitting", "running", "jumping", "crouching", "bending", "smiling",
             "grazing"),
    "material": ("wood", "plastic", "metal", "glass", "leather", "leather", "porcelain", "concrete", "paper",
                 "stone", "brick"),
    "color": (
        "white", "red", "black", "green", "silver", "gold", "khaki", "gray", "dark", "pink", "dark blue",
        "dark brown", "blue", "yellow", "tan", "brown", "orange", "purple", "beige", "blond", "brunette",
        "maroon", "light blue", "light brown",
    ),
}

OFFICIAL_ATTRIBUTES: frozenset[str] = frozenset(a for words in ATTRIBUTE_ONTOLOGY.values() for a in words)
