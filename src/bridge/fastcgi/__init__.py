"""fastcgi"""
