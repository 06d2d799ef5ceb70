"""LightningDataModules, data sources, tokenizers, samplers and collators."""

from datamodules.classification import ClassificationDataModule
from datamodules.language_modeling import CausalLMDataModule, MaskedLMDataModule
from datamodules.permutation_lm import PermutationLMDataModule
from datamodules.question_answering import QuestionAnsweringDataModule
from datamodules.seq2seq import Seq2SeqDataModule
from datamodules.sources import DataError, Source
from datamodules.tokenization import TokenizerSpec
from datamodules.translation import TranslationDataModule

__all__ = [
    "CausalLMDataModule",
    "ClassificationDataModule",
    "DataError",
    "MaskedLMDataModule",
    "PermutationLMDataModule",
    "QuestionAnsweringDataModule",
    "Seq2SeqDataModule",
    "Source",
    "TokenizerSpec",
    "TranslationDataModule",
]
