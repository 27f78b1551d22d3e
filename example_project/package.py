"""The toy sentiment model from "Packaging Deep Learning Models with Pickle".

A compound model: a sentencepiece tokenizer with its own trained state, a small
torch network, and pre/post-processing code. Production ships it with
``pickle.dump(model, f)``.
"""

import io

import sentencepiece
import torch


class MyTokenizer:
    """Sentencepiece tokenizer trained in memory from a text corpus."""

    def __init__(self, vocab_size=100):
        self.model = io.BytesIO()
        self.vocab_size = vocab_size

    def calibrate(self, file):
        """Train the sentencepiece model on the lines of ``file``."""
        with open(file, encoding="utf-8") as f:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(f.readlines()),
                model_writer=self.model,
                vocab_size=self.vocab_size,
                # Deterministic training: one thread, no sentence sampling/shuffling.
                num_threads=1,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                minloglevel=2,
            )
        self.tokenizer = sentencepiece.SentencePieceProcessor(model_proto=self.model.getvalue())

    def __call__(self, x):
        return self.tokenizer.encode(x)


class MyReader:
    """Decode a score vector into a decision label plus the raw prediction."""

    def __init__(self, d):
        self.d = d

    def __call__(self, x):
        pred = x.topk(1)[1].item()
        return {"decision": self.d[pred], "prediction": x.tolist()}


class MyLayer(torch.nn.Module):
    """Embedding -> GRU -> Linear, one score vector per time step."""

    def __init__(self, n_symbols, n_classes, n_embed=32, n_hidden=64):
        super().__init__()
        self.embedding = torch.nn.Embedding(n_symbols, n_embed)
        self.rnn = torch.nn.GRU(n_embed, n_hidden, 1, batch_first=True, dropout=0)
        self.proj = torch.nn.Linear(n_hidden, n_classes)

    def forward(self, x):
        return self.proj(self.rnn(self.embedding(x))[0])


class MyCompoundClass:
    """Tokenizer + layer + decoder, with the preprocess/forward/postprocess pattern.

    Deliberately *not* a ``torch.nn.Module`` (the seed's final form), so
    ``eval``/``train`` delegate to the layer.
    """

    def __init__(self, tokenizer, layer, decoder):
        self.tokenizer = tokenizer
        self.layer = layer
        self.decoder = decoder

    def eval(self):
        self.layer.eval()

    def train(self):
        self.layer.train()

    def preprocess(self, arg):
        return torch.tensor(self.tokenizer(arg), dtype=torch.long)

    def forward(self, args):
        output = self.layer(args)[:, -1, :]
        return output

    def postprocess(self, x):
        return self.decoder(x)


def build_model(corpus_path, vocab_size=100, classes=("good", "bad", "ugly")):
    """Calibrate a tokenizer on ``corpus_path`` and assemble the compound model.

    Weights are randomly initialised: seed torch before calling.
    """
    tokenizer = MyTokenizer(vocab_size=vocab_size)
    tokenizer.calibrate(corpus_path)
    layer = MyLayer(tokenizer.tokenizer.get_piece_size(), len(classes))
    decoder = MyReader(list(classes))
    return MyCompoundClass(tokenizer, layer, decoder)
