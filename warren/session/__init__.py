"""warren.session"""
