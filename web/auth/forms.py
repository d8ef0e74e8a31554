"""The sign-in form, the second factor, and the forms that choose or change a password."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from workflow.accounts import MIN_PASSWORD_LENGTH

__all__ = ["SignInForm", "ChangePasswordForm", "SetPasswordForm", "SecondFactorForm",
           "TwoFactorSetupForm", "ConfirmPasswordForm", "CodeForm"]


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


class SetPasswordForm(FlaskForm):
    """A new password, twice, chosen through a one-time link."""

    new = PasswordField("Password", validators=[
        DataRequired("Enter the password."),
        Length(min=MIN_PASSWORD_LENGTH, max=1024,
               message=f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")])
    confirm = PasswordField("The password again", validators=[
        DataRequired("Type the password again."),
        EqualTo("new", "The two passwords differ; type the same one twice.")])


class SecondFactorForm(FlaskForm):
    """The 6-digit code of the authenticator app, or a recovery code."""

    code = StringField("Code", validators=[
        DataRequired("Enter the 6-digit code your app shows, or a recovery code."),
        Length(max=32)])
    next = HiddenField()


class TwoFactorSetupForm(FlaskForm):
    """The code the app shows once it has the new secret."""

    code = StringField("The 6-digit code your app shows", validators=[
        DataRequired("Enter the 6-digit code your app shows."), Length(max=32)])
    next = HiddenField()


class ConfirmPasswordForm(FlaskForm):
    """One's current password, to confirm a change to one's own sign-in."""

    password = PasswordField("Your password", validators=[
        DataRequired("Enter your password."), Length(max=1024)])


class CodeForm(FlaskForm):
    """A current code of one's authenticator app, to confirm a change."""

    code = StringField("The 6-digit code your app shows", validators=[
        DataRequired("Enter the 6-digit code your app shows."), Length(max=32)])
