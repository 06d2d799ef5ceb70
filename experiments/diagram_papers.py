"""The papers the diagram cites: each part of the model names the section (and equation)
it implements, with the paper's address."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    paper: str  # short name shown in the tag: "Vaswani et al. 2017"
    section: str  # "§3.2.2"
    what: str  # "multi-head attention"
    url: str

    @property
    def tag(self) -> str:
        return self.section if self.paper == VASWANI else f"{SHORT[self.paper]} {self.section}"

    def __str__(self) -> str:
        return f"{self.paper}, {self.section} {self.what}"


VASWANI = "Vaswani et al. 2017"
SHORT = {
    VASWANI: "",
    "Devlin et al. 2019": "BERT",
    "Radford et al. 2019": "GPT-2",
    "Su et al. 2021": "RoPE",
    "Zhang & Sennrich 2019": "RMSNorm",
    "Ainslie et al. 2023": "GQA",
    "Shazeer 2020": "SwiGLU",
    "Hendrycks & Gimpel 2016": "GELU",
    "Yang et al. 2019": "XLNet",
}
URLS = {
    VASWANI: "https://arxiv.org/abs/1706.03762",
    "Devlin et al. 2019": "https://arxiv.org/abs/1810.04805",
    "Radford et al. 2019": "https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf",
    "Su et al. 2021": "https://arxiv.org/abs/2104.09864",
    "Zhang & Sennrich 2019": "https://arxiv.org/abs/1910.07467",
    "Ainslie et al. 2023": "https://arxiv.org/abs/2305.13245",
    "Shazeer 2020": "https://arxiv.org/abs/2002.05202",
    "Hendrycks & Gimpel 2016": "https://arxiv.org/abs/1606.08415",
    "Yang et al. 2019": "https://arxiv.org/abs/1906.08237",
}


def ref(paper: str, section: str, what: str) -> Reference:
    return Reference(paper, section, what, URLS[paper])


MULTI_HEAD = ref(VASWANI, "§3.2.2", "multi-head attention")
SCALED_DOT_PRODUCT = ref(VASWANI, "§3.2.1", "scaled dot-product attention, eq. (1)")
ATTENTION_USES = ref(VASWANI, "§3.2.3", "encoder-decoder attention and masked self-attention")
FEED_FORWARD = ref(VASWANI, "§3.3", "position-wise feed-forward networks, eq. (2)")
EMBEDDINGS = ref(VASWANI, "§3.4", "embeddings and softmax")
POSITIONAL = ref(VASWANI, "§3.5", "positional encoding (sines and cosines)")
RESIDUAL = ref(VASWANI, "§3.1", "residual connection and layer normalization")
LABEL_SMOOTHING = ref(VASWANI, "§5.4", "label smoothing")
PRE_LN = ref("Radford et al. 2019", "§2.3", "layer norm at each sub-block's input, a final norm")
LEARNED_POSITIONS = ref("Radford et al. 2019", "§2.3", "learned position embeddings (as GPT)")
BERT_INPUT = ref("Devlin et al. 2019", "§3", "input representation: token + segment + position")
BERT_MLM = ref("Devlin et al. 2019", "§3.1", "masked LM")
BERT_CLASSIFY = ref("Devlin et al. 2019", "§4.1", "classification on the [CLS] vector C")
BERT_SQUAD = ref("Devlin et al. 2019", "§4.2", "start and end vectors for answer spans")
ROPE = ref("Su et al. 2021", "§3.2", "rotary position embedding on queries and keys")
RMSNORM = ref("Zhang & Sennrich 2019", "§4", "RMSNorm: re-scaling without re-centering")
GQA = ref("Ainslie et al. 2023", "§2.2", "grouped-query attention")
SWIGLU = ref("Shazeer 2020", "§2", "GLU variants: SwiGLU")
GELU = ref("Hendrycks & Gimpel 2016", "§2", "GELU")
XLNET_OBJECTIVE = ref("Yang et al. 2019", "§2.2", "permutation language modeling, eq. (3)")
XLNET_TWO_STREAM = ref("Yang et al. 2019", "§2.3", "two-stream self-attention, eq. (4)-(5)")
