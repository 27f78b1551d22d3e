"""A sentencepiece-only pipeline: text -> pieces and ids (no torch module at all)."""

import io

import sentencepiece

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "how vexingly quick daft zebras jump",
    "sphinx of black quartz judge my vow",
    "the five boxing wizards jump quickly",
] * 4
WORDS = sorted({w for line in CORPUS for w in line.split()})


class PiecePipeline:
    def __init__(self, vocab_size=50):
        proto = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(CORPUS),
            model_writer=proto,
            vocab_size=vocab_size,
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            minloglevel=2,
        )
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())

    def __call__(self, text):
        return {
            "ids": self.processor.encode(text),
            "pieces": self.processor.encode(text, out_type=str),
        }


def build_model():
    return PiecePipeline()
