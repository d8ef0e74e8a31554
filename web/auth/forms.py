"""The sign-in form and the form that changes one's own password."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, EqualTo, Length

from workflow.accounts import MIN_PASSWORD_LENGTH

__all__ = ["SignInForm", "ChangePasswordForm"]


class SignInForm(FlaskForm):
    """Email and password of a member of staff."""

    email = EmailField("Email address", validators=[
        DataRequired("Enter your email address."), Length(max=254)])
    password = PasswordField("Password", validators=[
        DataRequired("Enter your password."), Length(max=1024)])
    next = HiddenField()


class ChangePasswordForm(FlaskForm):
    """The signed-in member of staff's current password and the new one, twice."""

    current = PasswordField("Current password", validators=[
        DataRequired("Enter your current password."), Length(max=1024)])
    new = PasswordField("New password", validators=[
        DataRequired("Enter the new password."),
        Length(min=MIN_PASSWORD_LENGTH, max=1024,
               message=f"The new password must have at least {MIN_PASSWORD_LENGTH} "
                       "characters.")])
    confirm = PasswordField("The new password again", validators=[
        DataRequired("Type the new password again."),
        EqualTo("new", "The two new passwords differ; type the same one twice.")])
