"""nn.TransformerEncoder over a float sequence, mean-pooled into a score vector."""

import torch


class EncoderRegressor(torch.nn.Module):
    def __init__(self, d_model=16, n_out=3):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(
            d_model, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True
        )
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d_model, n_out)
        self.d_model = d_model

    def preprocess(self, values):
        x = torch.tensor(values, dtype=torch.float32)
        return x.reshape(-1, 1).expand(-1, self.d_model).contiguous()

    def forward(self, batch):
        return self.head(self.encoder(batch).mean(dim=1))

    def postprocess(self, scores):
        return scores


def build_model():
    return EncoderRegressor()
