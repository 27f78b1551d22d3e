import pytest
from hypothesis import strategies as st
from strategies import sentences


def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="sentiment", inputs=sentences())


def test_sentiment_any_text(modelpack, sentiment_model):
    modelpack.check(
        sentiment_model, name="sentiment_any_text", inputs=st.text(min_size=1, max_size=40)
    )


# One golden per serializer (README "Choosing a serializer"): the same model written as
# production ships it. The seed model pins no code, so each golden loads on any Python.
@pytest.mark.modelpack(examples=10, recorded=4)
@pytest.mark.parametrize("serializer", ["torch", "dill", "cloudpickle"])
def test_sentiment_serialized(modelpack, sentiment_model, serializer):
    modelpack.check(
        sentiment_model,
        name=f"sentiment_{serializer}",
        inputs=sentences(),
        serializer=serializer,
    )
