"""Multinomial logistic regression (softmax regression) on the 8x8 digits.

The model is z = x W + b with W of shape (64, 10), the loss the softmax
cross-entropy plus a small L2 penalty, trained by mini-batch gradient descent
with Nesterov momentum. The digits (1,797 images) ship with gdjax; a quarter is
held out, and the test accuracy is recorded after every epoch inside the
compiled run (``metric=`` with ``val_data=``).

Run:  python examples/logistic_regression_digits.py
"""

import argparse
import os

import jax
import numpy as np

import gdjax as gd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="gdjax-out", help="(unused: no figure)")
parser.add_argument("--epochs", type=int, default=30)
args = parser.parse_args()
epochs = 5 if os.environ.get("GDJAX_EXAMPLE_QUICK") == "1" else args.epochs

(x, y), (x_test, y_test) = gd.datasets.digits(test_fraction=0.25, seed=0)
print(f"digits: {x.shape[0]} training and {x_test.shape[0]} test images of 8x8 pixels")

init_key, run_key = jax.random.split(jax.random.key(0))
params = gd.init.dense(init_key, 64, 10)  # {"w": (64, 10), "b": (10,)}
loss = gd.make_loss(gd.models.linear, gd.losses.softmax_cross_entropy, l2=1e-4)

result = gd.fit(
    loss,
    params,
    (x, y),
    gd.sgd(0.1, momentum=0.9, nesterov=True),
    key=run_key,  # decides the shuffling of every epoch
    epochs=epochs,
    regime=gd.minibatch(64),
    val_data=(x_test, y_test),  # history.val_loss: test loss after each epoch
    metric=gd.accuracy(gd.models.linear),  # history.metric: test accuracy
)

# One history row per epoch run; history.epoch numbers them from 1.
h = result.history
print("epoch  train loss  test loss  test accuracy")
for e, loss_e, val_e, acc_e in zip(h.epoch, h.loss, h.val_loss, h.metric, strict=True):
    if e <= 3 or e % 5 == 0 or e == result.epoch:
        print(f"{int(e):5d}  {loss_e:10.4f}  {val_e:9.4f}  {100 * acc_e:12.1f}%")
print(result.reason)

# Predicted classes and a confusion count, on the host.
logits = gd.models.linear(result.params, x_test)
predicted = np.asarray(logits.argmax(axis=1))
wrong = predicted != np.asarray(y_test)
accuracy = 100 * (1 - wrong.mean())
print(f"test accuracy: {accuracy:.1f}% ({wrong.sum()} of {wrong.size} wrong)")
