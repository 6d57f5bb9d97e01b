"""The dialplan: extensions.conf, its applications and the channels they drive."""
