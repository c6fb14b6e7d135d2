from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from app.accounts import MIN_PASSWORD_LENGTH


class SignupForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(message="Enter a valid email address.")])
    name = StringField("Name", validators=[Length(max=200)])
    password = PasswordField(
        "Password",
        validators=[
            DataRequired(),
            Length(min=MIN_PASSWORD_LENGTH, max=200, message=f"Use at least {MIN_PASSWORD_LENGTH} characters."),
        ],
    )
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", "Passwords do not match.")])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(message="Enter a valid email address.")])
    password = PasswordField("Password", validators=[DataRequired()])


class ResetRequestForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(message="Enter a valid email address.")])


class ResetPasswordForm(FlaskForm):
    password = PasswordField(
        "New password",
        validators=[
            DataRequired(),
            Length(min=MIN_PASSWORD_LENGTH, max=200, message=f"Use at least {MIN_PASSWORD_LENGTH} characters."),
        ],
    )
    confirm = PasswordField("Repeat password", validators=[DataRequired(), EqualTo("password", "Passwords do not match.")])
