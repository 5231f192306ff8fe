"""Models for the importer's tests, imported by file as a user's would be
(`nnstep import tests/importer/models.py:Name`). Each is built with no arguments. The "done" models
of the issue come first: a trained-style MLP, the PyTorch MNIST example's CNN, a residual block, a
self-attention block and an LSTM tagger; then one small model per mapped module or function."""
import math

import torch
import torch.nn.functional as F
from torch import nn


# --- the models a user brings ----------------------------------------------------------------------

class TrainedMLP(nn.Module):
    """A 784-64-10 MLP whose weights are not torch's init: "trained" by a few Adam steps on a fixed
    seed in its constructor (as a user's model would load its trained state)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(20, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 4)
        x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
        opt = torch.optim.Adam(self.parameters(), lr=0.01)
        for _ in range(20):
            opt.zero_grad()
            F.cross_entropy(self(x), y).backward()
            opt.step()

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MnistNet(nn.Module):
    """pytorch/examples mnist/main.py's Net, as it is there."""

    def __init__(self):
        super(MnistNet, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


class ResidualBlock(nn.Module):
    """A ResNet basic block: conv-bn-relu-conv-bn, plus the input, then relu; batchnorm with
    running statistics that are not the defaults."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn1.running_mean.fill_(0.25)
            self.bn1.running_var.fill_(2.0)
            self.bn2.weight.uniform_(0.5, 1.5)
            self.bn2.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + x
        return F.relu(out)


class TinyResNet(nn.Module):
    """torchvision's ResNet in small: a stem, a basic block with a strided 1x1 downsample on the skip
    (out += identity), global average pooling and a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.layer1_conv1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.layer1_bn1 = nn.BatchNorm2d(8)
        self.layer1_conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.layer1_bn2 = nn.BatchNorm2d(8)
        self.downsample = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        identity = self.downsample(x)
        out = self.relu(self.layer1_bn1(self.layer1_conv1(x)))
        out = self.layer1_bn2(self.layer1_conv2(out))
        out += identity
        out = self.relu(out)
        out = self.avgpool(out)
        out = torch.flatten(out, 1)
        return self.fc(out)


class AdaptivePools(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveMaxPool2d((2, 3))
        self.pool1 = nn.AdaptiveAvgPool1d(2)
        self.pool2 = nn.AdaptiveMaxPool1d(1)

    def forward(self, x):
        h = self.pool(x)                                    # (N, 2, 4, 6) -> (N, 2, 2, 3)
        g = F.adaptive_avg_pool2d(x, 1).flatten(2)          # (N, 2, 1)
        h = self.pool1(torch.flatten(h, 2))                 # (N, 2, 6) -> (N, 2, 2)
        k = self.pool2(F.adaptive_max_pool2d(x, (1, 2)).flatten(2))   # (N, 2, 2) -> (N, 2, 1)
        return torch.cat([F.adaptive_max_pool1d(h, 1), F.adaptive_avg_pool1d(h, 1), g, k], dim=2)


class SelfAttentionBlock(nn.Module):
    """A transformer encoder block, pre-norm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + a
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class LSTMTagger(nn.Module):
    """The PyTorch tutorial's LSTM part-of-speech tagger, batch first."""

    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(10, 6)
        self.lstm = nn.LSTM(6, 6, batch_first=True)
        self.hidden2tag = nn.Linear(6, 3)

    def forward(self, sentence):
        embeds = self.word_embeddings(sentence)
        lstm_out, _ = self.lstm(embeds)
        tag_space = self.hidden2tag(lstm_out)
        return F.log_softmax(tag_space, dim=-1)


def make_mlp():
    """A function that returns the model."""
    return nn.Sequential(nn.Linear(3, 5), nn.Sigmoid(), nn.Linear(5, 2))


# --- one per mapped module and function ------------------------------------------------------------

class Seq(nn.Module):
    """A torch.nn module list applied in order."""
    mods: tuple = ()

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(*self.make())

    def make(self):
        return []

    def forward(self, x):
        return self.body(x)


def seq(*make):
    return type("S", (Seq,), {"make": lambda self: [m() for m in make]})


Activations = seq(lambda: nn.Linear(4, 6), nn.ReLU, lambda: nn.Linear(6, 6), lambda: nn.LeakyReLU(0.2),
                  nn.Tanh, nn.Sigmoid, nn.GELU, lambda: nn.GELU("tanh"), nn.Identity, lambda: nn.Softmax(dim=-1))
LogSoftmaxMod = seq(lambda: nn.Linear(4, 3, bias=False), lambda: nn.LogSoftmax(dim=1))
Conv1dPool = seq(lambda: nn.Conv1d(2, 3, 3, stride=2, padding=1), lambda: nn.MaxPool1d(2),
                 lambda: nn.Conv1d(3, 4, 2), lambda: nn.AvgPool1d(2, stride=1, padding=1), nn.Flatten)
Conv2dPool = seq(lambda: nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=1), lambda: nn.MaxPool2d(2, stride=1),
                 lambda: nn.AvgPool2d(2), nn.Flatten, lambda: nn.Linear(6, 2))
BatchNorm1dMod = seq(lambda: nn.Linear(4, 5), lambda: nn.BatchNorm1d(5, momentum=0.2), nn.ReLU)
BatchNorm1dSeq = seq(lambda: nn.Conv1d(2, 3, 1), lambda: nn.BatchNorm1d(3, affine=False))
LayerNormMod = seq(lambda: nn.Linear(4, 6), lambda: nn.LayerNorm(6, eps=1e-3))
DropoutMod = seq(lambda: nn.Linear(4, 6), lambda: nn.Dropout(0.3), lambda: nn.Linear(6, 2))


class RNNMod(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(3, 4, batch_first=True, nonlinearity="relu")

    def forward(self, x):
        return self.rnn(x)[0]


class RNNWhole(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(3, 4, batch_first=True)

    def forward(self, x):
        return self.rnn(x)


class RNNTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(3, 4, batch_first=True, bias=False)

    def forward(self, x):
        out, h = self.rnn(x)
        return out


class Functional(nn.Module):
    """Every functional form that maps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(4, 6)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        h = F.relu(a) + torch.sigmoid(b)
        h = h * torch.tanh(a)
        h = torch.relu(h) * 2.0
        h = h / 3
        h = F.leaky_relu(h, 0.1)
        h = F.gelu(h)
        h = torch.cat([h, a], dim=1)
        h = h.relu().sigmoid().tanh()
        h = F.dropout(h, 0.2, training=False)
        h = h.contiguous()
        return F.softmax(h, dim=-1) + torch.softmax(h, -1) + h.log_softmax(-1) + torch.log_softmax(h, dim=1)


class MoreFunctional(nn.Module):
    """The other spellings: F.sigmoid, F.tanh, torch.add, torch.mul, x.flatten(1), F.dropout in training."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 2)

    def forward(self, x):
        h = self.conv(x)
        a = torch.add(F.sigmoid(h), F.tanh(h))
        m = torch.mul(a, h)
        return F.dropout(m.flatten(1), 0.25, training=self.training)


class Shapes(nn.Module):
    """reshape / view / transpose / flatten / matmul on the batched tensor."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 12)

    def forward(self, x):
        h = self.fc(x)                          # (N, 6) -> (N, 12)
        q = h.view(h.size(0), 3, 4)
        k = torch.reshape(h, (-1, 3, 4))
        s = torch.matmul(q, k.transpose(1, 2))  # (N, 3, 3)
        s = s @ torch.transpose(q, 1, 2).transpose(-1, -2)   # (N, 3, 4)
        s = torch.flatten(s, 1) + h.reshape(x.shape[0], 12)
        return torch.flatten(s.view(-1, 2, 6), start_dim=1)


class HandAttention(nn.Module):
    """Attention written out by hand, as in many a tutorial: q kᵀ / √d, softmax, @ v, permute."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(4)
        out = scores.softmax(dim=-1) @ v
        return out.permute(0, 2, 1)


class FunctionalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        h = F.max_pool2d(self.conv(x), 2)
        h = F.avg_pool2d(h, kernel_size=2, stride=1)
        g = F.max_pool1d(torch.flatten(h, 2), 2)
        return F.avg_pool1d(g, 1)


class Causalish(nn.Module):
    """Self-attention without biases, called as mha(x, x, x) (need_weights at its default)."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 1, bias=False, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x)[0]


class EmbeddingMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.emb(x))


# --- what does not map -----------------------------------------------------------------------------

class UsesSin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.sin(self.fc(x))


class UsesBilinearModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.soft = nn.Softplus()

    def forward(self, x):
        return self.soft(self.fc(x))


class ControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(3, width)


class TwoLayerLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


class ReturnsTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x)
        return h, x


class AddsBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.shift = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.fc(x) + self.shift


not_a_model = 3
_ = math
