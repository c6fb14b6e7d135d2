from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from app.accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

# Strength (zxcvbn, against the account's email and name) is judged by app.accounts, which
# raises WeakPassword with a message for the password field; the form checks what it can alone.
_NEW_PASSWORD = [
    DataRequired(),
    Length(min=MIN_PASSWORD_LENGTH, max=MAX_PASSWORD_LENGTH,
           message=f"Use at least {MIN_PASSWORD_LENGTH} characters (and at most {MAX_PASSWORD_LENGTH})."),
]
_EMAIL = [DataRequired(), Email(message="Enter a valid email address."), Length(max=254)]


class SignupForm(FlaskForm):
    email = EmailField("Email", validators=_EMAIL)
    name = StringField("Name", validators=[Length(max=200)])
    password = PasswordField("Password", validators=_NEW_PASSWORD,
                             description=f"At least {MIN_PASSWORD_LENGTH} characters; a few uncommon words work well.")
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", "Passwords do not match.")])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=_EMAIL)
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])


class ResetRequestForm(FlaskForm):
    email = EmailField("Email", validators=_EMAIL)


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=_NEW_PASSWORD)
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", "Passwords do not match.")])


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
    password = PasswordField("New password", validators=_NEW_PASSWORD)
    confirm = PasswordField("Repeat new password", validators=[DataRequired(), EqualTo("password", "Passwords do not match.")])


class ConfirmForm(FlaskForm):
    """A button with only the CSRF token (verify the email, end a session, sign out everywhere)."""
