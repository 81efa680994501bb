"""warren.cli"""
