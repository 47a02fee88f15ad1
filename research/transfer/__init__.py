"""Transfer learning: pretrained-backbone features, a grid-searched logistic regression, a Kaggle submission."""
