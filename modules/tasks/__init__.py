"""LightningModules: thin task wrappers around the pure-torch models."""

from modules.tasks.base import StepOutput, TaskModule, metric_goal
from modules.tasks.checkpoints import load_task
from modules.tasks.classification import SequenceClassificationModule
from modules.tasks.language_modeling import CausalLMModule, MaskedLMModule
from modules.tasks.optimization import NonFiniteError, OptimizerConfig
from modules.tasks.permutation_lm import PermutationLMModule
from modules.tasks.question_answering import QuestionAnsweringModule
from modules.tasks.seq2seq import Seq2SeqModule
from modules.tasks.translation import TranslationModule

TASKS: tuple[type[TaskModule], ...] = (
    TranslationModule,
    Seq2SeqModule,
    CausalLMModule,
    MaskedLMModule,
    PermutationLMModule,
    SequenceClassificationModule,
    QuestionAnsweringModule,
)

__all__ = [
    "TASKS",
    "CausalLMModule",
    "MaskedLMModule",
    "NonFiniteError",
    "OptimizerConfig",
    "PermutationLMModule",
    "QuestionAnsweringModule",
    "Seq2SeqModule",
    "SequenceClassificationModule",
    "StepOutput",
    "TaskModule",
    "TranslationModule",
    "load_task",
    "metric_goal",
]
