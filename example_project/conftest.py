from pathlib import Path

import pytest
import torch
from package import build_model

CORPUS = Path(__file__).with_name("corpus.txt")


@pytest.fixture(scope="session")
def sentiment_model():
    torch.manual_seed(0)
    return build_model(CORPUS)
