"""rim: the Recurrent Inference Machine (Putzky & Welling) with weights from the model zoo."""

from pipelines.methods._learned import learned
from pipelines.reconstructors import LearnedModel, register

# sized so training finishes on a 2-core CPU (the model card records the time)
METHOD = register(learned(
    "rim", "Recurrent Inference Machine (Putzky & Welling), shipped weights from the model zoo",
    LearnedModel("rim", "rim-brain-sim", {"num_steps": 8, "hidden_channels": 48, "num_layers": 2, "cell": "gru"})))
