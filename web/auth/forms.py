"""The sign-in form."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, Length

__all__ = ["SignInForm"]


class SignInForm(FlaskForm):
    """Email and password of a member of staff."""

    email = EmailField("Email address", validators=[
        DataRequired("Enter your email address."), Length(max=254)])
    password = PasswordField("Password", validators=[
        DataRequired("Enter your password."), Length(max=1024)])
    next = HiddenField()
