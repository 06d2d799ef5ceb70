"""Pure-PyTorch layer of transformer-suite: attention core, layers, the three models, interop.

Nothing in this package (outside `modules.tasks`) imports Lightning, so the models can be
reused in any PyTorch project.
"""
