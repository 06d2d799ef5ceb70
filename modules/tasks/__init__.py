"""LightningModules: thin task wrappers around the pure-torch models."""

from modules.tasks.base import OptimizerConfig, TaskModule
from modules.tasks.classification import SequenceClassificationModule
from modules.tasks.language_modeling import CausalLMModule, MaskedLMModule
from modules.tasks.question_answering import QuestionAnsweringModule
from modules.tasks.translation import TranslationModule

__all__ = [
    "CausalLMModule",
    "MaskedLMModule",
    "OptimizerConfig",
    "QuestionAnsweringModule",
    "SequenceClassificationModule",
    "TaskModule",
    "TranslationModule",
]
