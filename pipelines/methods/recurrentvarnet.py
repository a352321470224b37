"""recurrentvarnet: RecurrentVarNet (Yiasemis et al. 2022) with weights from the model zoo."""

from pipelines.methods._learned import learned
from pipelines.reconstructors import LearnedModel, register

# sized so training finishes on a 2-core CPU (the model card records the time)
METHOD = register(learned(
    "recurrentvarnet", "RecurrentVarNet (Yiasemis et al. 2022), shipped weights from the model zoo",
    LearnedModel("recurrentvarnet", "recurrentvarnet-brain-sim",
                 {"num_steps": 8, "hidden_channels": 32, "num_layers": 4})))
