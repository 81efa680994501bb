"""warren.api"""
