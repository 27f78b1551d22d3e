from hypothesis import strategies as st
from strategies import sentences


def test_sentiment(modelpack, sentiment_model):
    modelpack.check(sentiment_model, name="sentiment", inputs=sentences())


def test_sentiment_any_text(modelpack, sentiment_model):
    modelpack.check(
        sentiment_model, name="sentiment_any_text", inputs=st.text(min_size=1, max_size=40)
    )
