"""warren.io"""
