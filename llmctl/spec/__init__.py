"""What a stage is given: the blocks stage specs compose (data and formats, training, generation, launcher), the
recipe-wide settings and RecipeBase, smoke sizes, and StageContext."""
