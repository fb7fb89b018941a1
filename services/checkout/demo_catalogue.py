"""The demo catalogue `make run` loads: 56 products over 10 categories, prices in kopecks,
including a 1 RUB item (no points can pay for it) and gift cards (a category points cannot pay
for, by the default CHECKOUT_POINTS_EXCLUDED_CATEGORIES)."""

from __future__ import annotations

# category: [(sku, title, price_minor), ...]
DEMO_CATALOGUE: dict[str, list[tuple[str, str, int]]] = {
    "electronics": [
        ("el-phone", "Smartphone 128 GB", 2_499_000),
        ("el-headphones", "Wireless headphones", 599_000),
        ("el-charger", "USB-C charger 65 W", 199_000),
        ("el-cable", "USB-C cable 1 m", 49_900),
        ("el-powerbank", "Power bank 20,000 mAh", 299_000),
        ("el-watch", "Smart watch", 1_299_000),
    ],
    "appliances": [
        ("ap-kettle", "Electric kettle", 350_000),
        ("ap-toaster", "Toaster", 279_000),
        ("ap-blender", "Blender", 459_000),
        ("ap-iron", "Steam iron", 329_000),
        ("ap-vacuum", "Robot vacuum cleaner", 1_999_000),
        ("ap-mixer", "Hand mixer", 189_000),
    ],
    "books": [
        ("bk-novel", "Novel, hardcover", 69_900),
        ("bk-cookbook", "Cookbook", 129_000),
        ("bk-kids", "Picture book for children", 45_000),
        ("bk-python", "Programming in Python", 219_000),
        ("bk-atlas", "World atlas", 159_000),
        ("bk-poems", "Poems, paperback", 9_950),
    ],
    "clothing": [
        ("cl-tshirt", "Cotton T-shirt", 99_000),
        ("cl-jeans", "Jeans", 349_000),
        ("cl-socks", "Socks, 5 pairs", 49_900),
        ("cl-jacket", "Winter jacket", 899_000),
        ("cl-scarf", "Wool scarf", 149_000),
        ("cl-cap", "Baseball cap", 79_000),
    ],
    "household": [
        ("hh-soap", "Hand soap", 9_950),
        ("hh-towels", "Paper towels, 4 rolls", 29_900),
        ("hh-sponges", "Kitchen sponges, 10", 19_900),
        ("hh-detergent", "Laundry detergent 3 kg", 89_900),
        ("hh-bags", "Rubbish bags, 30", 14_900),
        ("hh-candle", "Scented candle", 39_900),
    ],
    "toys": [
        ("ty-blocks", "Building blocks, 500 pieces", 299_000),
        ("ty-puzzle", "Puzzle, 1000 pieces", 89_000),
        ("ty-car", "Remote-control car", 259_000),
        ("ty-doll", "Doll", 149_000),
        ("ty-ball", "Football", 119_000),
        ("ty-cards", "Card game", 59_000),
    ],
    "groceries": [
        ("gr-coffee", "Coffee beans 1 kg", 149_000),
        ("gr-tea", "Green tea, 100 bags", 39_900),
        ("gr-chocolate", "Dark chocolate bar", 12_900),
        ("gr-honey", "Honey 500 g", 54_900),
        ("gr-pasta", "Pasta 1 kg", 15_900),
        ("gr-water", "Still water 1.5 l", 5_900),
    ],
    "beauty": [
        ("bt-cream", "Face cream", 89_000),
        ("bt-shampoo", "Shampoo", 45_900),
        ("bt-perfume", "Eau de parfum 50 ml", 699_000),
        ("bt-lipbalm", "Lip balm", 19_900),
        ("bt-brush", "Hair brush", 35_000),
        ("bt-sunscreen", "Sunscreen SPF 50", 79_900),
    ],
    "stationery": [
        ("st-pencil", "Pencil", 100),
        ("st-notebook", "Notebook A5", 24_900),
        ("st-pens", "Ballpoint pens, 10", 29_900),
        ("st-stapler", "Stapler", 39_900),
        ("st-backpack", "School backpack", 259_000),
    ],
    "gift-cards": [
        ("gc-1000", "Gift card 1,000 RUB", 100_000),
        ("gc-3000", "Gift card 3,000 RUB", 300_000),
        ("gc-5000", "Gift card 5,000 RUB", 500_000),
    ],
}
